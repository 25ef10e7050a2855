"""mrfsynth: neural texture synthesis and style transfer (CNNMRF, Gram and guided
correspondence priors over VGG19) from numpy, on the Rust engine.

Images are (H, W, 3) numpy arrays, uint8 or float in 0..1 (or paths to image files); results
come back in the dtype of the main input. Options take the command line's flag names with
underscores (``tv_weight=1e-3``, ``line_search="wolfe"``); unknown ones raise TypeError.

Runs release the GIL. Progress shows with tqdm when it is installed (``progress=False`` hides
it). ``callback(level, iteration, loss, image)`` is called after every optimiser iteration;
returning ``False`` stops the run and the best image so far is returned. Ctrl-C stops the run
after the current iteration and raises ``KeyboardInterrupt`` (nothing is returned).

Bad settings and inputs raise ``ValueError`` (``FileNotFoundError`` for a missing file) with the
engine's one-line message. The VGG19 weights come from the same cache as the command line
(fetched on first use) and the network is loaded once per process.
"""

from ._native import __version__, compare, features, metrics, texture, transfer

__all__ = ["texture", "transfer", "compare", "metrics", "features", "__version__"]

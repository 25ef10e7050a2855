//! The library's errors: one enum, whose [`ErrorKind`] says whose fault a failure was (the
//! command line maps kinds to exit codes). Every message is one line.

use crate::assets::weights::WeightsError;
use crate::device::DeviceError;
use crate::image_io::ImageError;

/// Everything a library call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input or output image could not be read or written.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The VGG19 weights could not be fetched, read or checked.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The requested device could not be opened.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Settings out of range, or settings that do not go together.
    #[error("{0}")]
    Settings(String),
    /// Inputs that do not go together (e.g. images whose sizes must agree).
    #[error("{0}")]
    Input(String),
    /// An output or sample too small for the network's layers.
    #[error("{0}")]
    TooSmall(String),
    /// The run does not fit in the memory available, not even in tiles.
    #[error("{0}")]
    NotEnoughMemory(String),
    /// A generator model file that is truncated, foreign, or does not fit the job.
    #[error("{0}")]
    Model(String),
    /// The caller's observer asked to stop before anything usable was made.
    #[error("interrupted")]
    Interrupted,
    /// A computation failed (tensor shapes, device errors, numerical failure).
    #[error(transparent)]
    Compute(#[from] candle_core::Error),
    /// Reading or writing a file other than an image (with a [`Error::Context`] naming it).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Writing a JSON sidecar or report.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// What was being done when `source` happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

/// Whose fault an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Settings that cannot work (a usage error on the command line).
    Settings,
    /// An input the run cannot use: a bad image, sizes that cannot work, too little memory.
    BadInput,
    /// The network's weights.
    Weights,
    /// Stopped on request.
    Interrupted,
    /// Anything else: a bug, a device failure, a failed write.
    Failure,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Image(_)
            | Error::Input(_)
            | Error::TooSmall(_)
            | Error::NotEnoughMemory(_)
            | Error::Model(_) => ErrorKind::BadInput,
            Error::Weights(_) => ErrorKind::Weights,
            Error::Settings(_) => ErrorKind::Settings,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Device(_) | Error::Compute(_) | Error::Io(_) | Error::Json(_) => {
                ErrorKind::Failure
            }
            Error::Context { source, .. } => source.kind(),
        }
    }

    /// The message as one line (candle's errors may carry a backtrace on later lines).
    pub fn one_line(&self) -> String {
        let s = self.to_string();
        let first = s.lines().map(str::trim).find(|l| !l.is_empty());
        first.unwrap_or("error").to_string()
    }

    /// Wraps this error with what was being done.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to any error that converts into [`Error`].
pub trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

/// Returns early with an [`Error`] variant built from a format string.
macro_rules! fail {
    ($variant:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::$variant(format!($($arg)*)))
    };
}
pub(crate) use fail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_reads_outer_to_inner() {
        let e = Error::TooSmall("the output 8x8 is too small".into()).context("planning");
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.to_string(), "planning: the output 8x8 is too small");
        let r: std::result::Result<(), candle_core::Error> =
            Err(candle_core::Error::Msg("shape mismatch".into()));
        let e = r.context("level 96x96").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Failure);
        assert_eq!(e.one_line(), "level 96x96: shape mismatch");
    }
}

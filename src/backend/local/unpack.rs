//! Unpacking one layer (a tar, gzip or zstd compressed or not) into a directory in the
//! form overlayfs expects, safely: untrusted input.
//!
//! TO BE IMPLEMENTED (helper).

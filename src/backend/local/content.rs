//! The content store: blobs addressed by digest under `<root>/content/blobs/sha256/<hex>`,
//! every digest and size verified on the way in.
//!
//! TO BE IMPLEMENTED (helper).

//! Importing images into the content store: an OCI image layout directory, an OCI archive
//! (a tar of such a directory, optionally gzip-compressed), or a `docker save` tarball.
//!
//! TO BE IMPLEMENTED (helper).

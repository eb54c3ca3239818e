//! A Compose service as berth's (see the module doc of [`crate::compose`]).

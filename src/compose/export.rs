//! `berth export compose`: see the module doc of [`crate::compose`].

//! Nothing here: the package exists for its tests (`tests/`), which drive
//! c4m's API with kube-rs, so that only they build kube.

//! Node bootstrap: a reconciler for the K3s, containerd/nydus and kube-proxy
//! host files. Owns the files it manages and their undo log. Never touches a
//! file it does not own.
//! (Built in the node bootstrap issue.)

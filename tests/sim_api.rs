//! kube-rs tests against the simulated cluster.

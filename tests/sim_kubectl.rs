//! Real kubectl against the simulated cluster.

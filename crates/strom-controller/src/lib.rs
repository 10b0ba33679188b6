//! strom-controller

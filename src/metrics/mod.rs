//! Quality metrics on the official detectors.

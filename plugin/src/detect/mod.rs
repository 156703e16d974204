//! Built-in and custom detectors of personal data and secrets.

"""Test and benchmark support that is not part of the application: tiny random-weight models in the
real key layouts."""

"""Runs of programs and what is built from them: MLPerf submission trees and their official checks."""

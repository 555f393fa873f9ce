"""The test suite. A package, so that ``tests.helpers`` imports the same way from the tests,
the fuzz target (fuzz/) and the benchmarks (benchmarks/)."""

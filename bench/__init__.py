"""The measuring tools the `refocus bench` verb ships with (the recorded benchmark scripts stay in benchmarks/)."""

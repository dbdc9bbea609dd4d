"""The algorithm: schedules, priors, operators, samplers, results."""

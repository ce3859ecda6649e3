"""Usage history: what each run saw (sizes, free space, uses) kept in the state database; growth and forecasts from it."""

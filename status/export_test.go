package status

// MaxConns is maxConns, for the tests.
const MaxConns = maxConns

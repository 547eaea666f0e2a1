//go:build !race

package smtp_test

const raceEnabled = false

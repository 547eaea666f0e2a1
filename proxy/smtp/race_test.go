//go:build race

package smtp_test

// raceEnabled: under the race detector, sync.Pool drops a quarter of what
// is put back, so crypto/tls reallocates record buffers that it otherwise
// reuses; allocation counts are looser then.
const raceEnabled = true

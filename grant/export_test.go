package grant

// Remembered is how many accounts t holds in memory (for tests).
func (t *Tokens) Remembered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.accounts)
}

package status

// MaxConns is maxConns, for the tests.
const MaxConns = maxConns

// BreakListener closes the page's listener under net/http, as a failing
// accept would, and waits for the page to give it up.
func (s *Server) BreakListener() {
	s.mu.Lock()
	b := s.cur
	s.mu.Unlock()
	b.ln.Close()
	<-b.done
}

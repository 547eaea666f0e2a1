//go:build e2e

package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mbsyncHalf is how many messages each side starts with: after the first
// synchronisation both sides hold 2*mbsyncHalf.
const mbsyncHalf = 100

// TestMbsync: mbsync (isync) synchronises a mailbox of 200 messages both
// ways through mailproxy: 100 that exist only at the provider come down,
// 100 that exist only in the local maildir go up; then deletions made
// locally and flags set at the provider travel across on a second run.
func TestMbsync(t *testing.T) {
	e := suite.begin(t)
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			r := e.via(e.mp, "imap", mode)
			box := fmt.Sprintf("E2E-Sync-%s-%08x", mode, rand.Uint32())
			tag := fmt.Sprintf("%08x", rand.Uint32())

			s := e.step(t, "go-imap-transcript", r, fmt.Sprintf("create %s with %d messages at the provider", box, mbsyncHalf))
			c := s.dialIMAP()
			c.login(alice)
			c.ok("CREATE %s", quote(box))
			for i := range mbsyncHalf {
				c.appendMessage(box, "", syncMessage("far", tag, i))
			}
			c.logout()

			near := filepath.Join(t.TempDir(), "maildir")
			for _, sub := range []string{"cur", "new", "tmp"} {
				if err := os.MkdirAll(filepath.Join(near, "box", sub), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for i := range mbsyncHalf {
				name := fmt.Sprintf("%d.e2e%d.near", time.Now().Unix(), i)
				if err := os.WriteFile(filepath.Join(near, "box", "new", name), syncMessage("near", tag, i), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			s = e.step(t, "mbsync", r, "first synchronisation: 100 messages each way")
			s.must(cmdOpts{timeout: 3 * time.Minute}, s.mbsyncArgv(alice, box, near)...)
			s.expectUpstream(alice, "ok")
			want := syncIDs(tag, mbsyncHalf, nil)
			if got := localIDs(s, near); !equal(got, want) {
				s.Fatalf("the local maildir holds %d messages, want the %d of both sides (%s)", len(got), len(want), missing(want, got))
			}
			s = e.step(t, "go-imap-transcript", r, "count and list the provider's copy")
			if got := remoteIDs(s, box); !equal(got, want) {
				s.Fatalf("the provider's %s holds %d messages, want the %d of both sides (%s)", box, len(got), len(want), missing(want, got))
			}

			// Changes both ways: delete five messages locally, flag five at
			// the provider.
			deleted := map[string]bool{}
			files, _ := filepath.Glob(filepath.Join(near, "box", "*", "*"))
			for _, f := range files {
				b, _ := os.ReadFile(f)
				if id := messageID(b); strings.Contains(id, ".near.") && len(deleted) < 5 {
					os.Remove(f)
					deleted[id] = true
				}
			}
			s = e.step(t, "go-imap-transcript", r, "flag five far messages at the provider")
			c = s.dialIMAP()
			c.login(alice)
			c.ok("SELECT %s", quote(box))
			flagged := map[string]bool{}
			for i := range 5 {
				id := syncID("far", tag, i)
				flagged[id] = true
				untagged := c.ok(`UID SEARCH HEADER Message-ID %s`, quote(id))
				m := searchRE.FindStringSubmatch(strings.Join(untagged, "\n"))
				if m == nil || len(strings.Fields(m[1])) != 1 {
					c.fatalf("SEARCH for %s: %q", id, untagged)
				}
				c.ok(`UID STORE %s +FLAGS (\Flagged)`, strings.TrimSpace(m[1]))
			}
			c.logout()

			s = e.step(t, "mbsync", r, "second synchronisation: 5 local deletions up, 5 provider flags down")
			s.must(cmdOpts{timeout: 3 * time.Minute}, s.mbsyncArgv(alice, box, near)...)
			want = syncIDs(tag, mbsyncHalf, deleted)
			if got := localIDs(s, near); !equal(got, want) {
				s.Fatalf("the local maildir holds %d messages, want %d (%s)", len(got), len(want), missing(want, got))
			}
			localFlagged := flaggedLocal(s, near)
			for id := range flagged {
				if !localFlagged[id] {
					s.Fatalf("%s was flagged at the provider but its local file has no F flag (flagged locally: %v)", id, localFlagged)
				}
			}
			s = e.step(t, "go-imap-transcript", r, "check the deletions reached the provider, then delete the mailbox")
			if got := remoteIDs(s, box); !equal(got, want) {
				s.Fatalf("the provider's %s holds %d messages, want %d (%s)", box, len(got), len(want), missing(want, got))
			}
			c = s.dialIMAP()
			c.login(alice)
			c.ok("DELETE %s", quote(box))
			c.logout()
		})
	}
}

// mbsyncArgv writes the configuration and returns mbsync's command line.
func (s *step) mbsyncArgv(u user, farBox, near string) []string {
	rc := s.mbsyncConfig(u, farBox, near)
	return []string{"mbsync", "-c", rc, "e2e"}
}

func syncID(side, tag string, i int) string {
	return fmt.Sprintf("<sync-%s.%s.%d@e2e.provider.test>", tag, side, i)
}

// syncMessage is message i of a side ("far" or "near").
func syncMessage(side, tag string, i int) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: sync %s %d\r\nDate: %s\r\nMessage-ID: %s\r\n\r\nMessage %d of the %s side.\r\n",
		alice.name, alice.name, side, i, time.Now().Format(time.RFC1123Z), syncID(side, tag, i), i, side))
}

// syncIDs are the Message-IDs both sides should hold, less those deleted.
func syncIDs(tag string, n int, deleted map[string]bool) []string {
	var ids []string
	for _, side := range []string{"far", "near"} {
		for i := range n {
			if id := syncID(side, tag, i); !deleted[id] {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	return ids
}

var midRE = regexp.MustCompile(`(?mi)^Message-ID: (<[^>]+>)`)

func messageID(b []byte) string {
	if m := midRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

// localIDs lists the Message-IDs in the local maildir.
func localIDs(s *step, near string) []string {
	s.t.Helper()
	var ids []string
	for _, sub := range []string{"cur", "new"} {
		files, _ := filepath.Glob(filepath.Join(near, "box", sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				s.Fatalf("%v", err)
			}
			ids = append(ids, messageID(b))
		}
	}
	sort.Strings(ids)
	return ids
}

// flaggedLocal lists the Message-IDs whose maildir file has the F flag.
func flaggedLocal(s *step, near string) map[string]bool {
	out := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(near, "box", "*", "*"))
	for _, f := range files {
		_, flags, _ := strings.Cut(filepath.Base(f), ":2,")
		if strings.Contains(flags, "F") {
			b, _ := os.ReadFile(f)
			out[messageID(b)] = true
		}
	}
	return out
}

// remoteIDs lists the Message-IDs in box at the provider, through the
// step's route.
func remoteIDs(s *step, box string) []string {
	s.t.Helper()
	c := s.dialIMAP()
	c.login(alice)
	c.ok("EXAMINE %s", quote(box))
	var ids []string
	for _, line := range c.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])") {
		if id := messageID([]byte(line)); id != "" {
			ids = append(ids, id)
		}
	}
	c.logout()
	sort.Strings(ids)
	return ids
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// missing says which of want got lacks and which it has in excess.
func missing(want, got []string) string {
	have := map[string]int{}
	for _, g := range got {
		have[g]++
	}
	var lack []string
	for _, w := range want {
		if have[w] == 0 {
			lack = append(lack, w)
		}
		have[w]--
	}
	var extra []string
	for g, n := range have {
		if n > 0 {
			extra = append(extra, g+" x"+strconv.Itoa(n))
		}
	}
	clipList := func(l []string) string {
		if len(l) > 5 {
			return strings.Join(l[:5], " ") + fmt.Sprintf(" and %d more", len(l)-5)
		}
		return strings.Join(l, " ")
	}
	return fmt.Sprintf("missing: [%s]; unexpected: [%s]", clipList(lack), clipList(extra))
}

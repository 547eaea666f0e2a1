//go:build !linux

package main

import (
	"errors"
	"io"
	"os"
)

// isTerminal is false where mailproxy cannot turn echo off: the password
// is then read as one line of standard input.
func isTerminal(*os.File) bool { return false }

func readHidden(*os.File, io.Writer, string) (string, error) {
	return "", errors.New("no terminal support on this system")
}

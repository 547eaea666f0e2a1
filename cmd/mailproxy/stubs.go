package main

import (
	"fmt"
	"io"
)

func demoCmd(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "mailproxy demo: not available in this build yet")
	return exitFailure
}

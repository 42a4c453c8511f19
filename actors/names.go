package actors

import (
	"unicode"
	"unicode/utf8"
)

// validName accepts valid UTF-8 without spaces or control characters (room names).
func validName(s string) bool { return printable(s, false) }

// validDisplayName is validName that also accepts plain spaces.
func validDisplayName(s string) bool { return printable(s, true) }

func printable(s string, spaces bool) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if spaces && r == ' ' {
			continue
		}
		if unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

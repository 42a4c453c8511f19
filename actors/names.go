package actors

import (
	"unicode"
	"unicode/utf8"
)

// validName accepts valid UTF-8 without spaces or control characters.
func validName(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// validDisplayName is validName that also accepts plain spaces.
func validDisplayName(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r != ' ' && (unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r)) {
			return false
		}
	}
	return true
}

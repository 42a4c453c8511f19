//go:build !unix

package actors

import (
	"os"
	"path/filepath"
)

// lockDir opens dir's LOCK file; other systems do not lock it.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
}

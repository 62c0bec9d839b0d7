package v1alpha1_test

import (
	"io"

	. "github.com/onsi/gomega"
)

func readAll(r io.Reader) string {
	if r == nil {
		return ""
	}
	b, err := io.ReadAll(r)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

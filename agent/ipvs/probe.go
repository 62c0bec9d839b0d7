package ipvs

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
)

// ProcNetIPVS exists when the ip_vs module is loaded (in any namespace's
// /proc view, it is per network namespace).
const ProcNetIPVS = "/proc/net/ip_vs"

// Probe reports whether the running kernel can serve the IPVS backend. It
// looks for /proc/net/ip_vs, then asks generic netlink for the "IPVS"
// family. It runs no modprobe itself, but the genetlink lookup lets the
// kernel autoload ip_vs where the module exists and autoloading is on.
func Probe() error {
	if _, err := os.Stat(ProcNetIPVS); err == nil {
		return nil
	}
	fam, err := netlink.GenlFamilyGet("IPVS")
	if err == nil && fam != nil {
		return nil
	}
	if err == nil {
		err = errors.New("no such family")
	}
	return fmt.Errorf("IPVS is not available in this kernel: %s missing and generic netlink family IPVS: %v", ProcNetIPVS, err)
}

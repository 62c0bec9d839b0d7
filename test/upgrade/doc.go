// Package upgrade holds the upgrade test on the real cluster (make
// test-upgrade, E2E=1): release N-1, built from an earlier commit in a git
// worktree of its own into its own images, is installed on real nodes
// (test/shipped) with two GatewayConfigs, a ProxyPolicy and live traffic;
// the operator is then upgraded to N, this checkout, as a user would
// (hack/deploy.sh with N's images over N-1), and downgraded back to N-1.
// The test shows the agents replaced only by the rollout and in its order,
// held under Manual until approved, no failed connection, and every custom
// resource kept as it was. docs/testing.md says what it runs and why.
package upgrade

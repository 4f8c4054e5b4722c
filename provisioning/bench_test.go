package provisioning

import (
	"bytes"
	"context"
	"testing"
)

// BenchmarkPlan100 plans 100 trunks against the libvirt test driver, raw
// files and the knftables fake, all already applied: the cost of reading
// and comparing the state (target: well under a second per plan).
func BenchmarkPlan100(b *testing.B) {
	ctx := context.Background()
	h := newHost(b)
	p := h.provisioner(b, configYAML(h.dir, 100, nil))
	if _, err := p.Apply(ctx, &bytes.Buffer{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		pl, err := p.Plan(ctx)
		if err != nil || pl.Pending() {
			b.Fatalf("plan: %v pending=%v", err, pl != nil && pl.Pending())
		}
	}
}

// BenchmarkReapply100 is a no-op apply of 100 trunks: load and validate
// the configuration, build the desired state, plan, find nothing to do.
func BenchmarkReapply100(b *testing.B) {
	ctx := context.Background()
	h := newHost(b)
	yaml := configYAML(h.dir, 100, nil)
	if _, err := h.provisioner(b, yaml).Apply(ctx, &bytes.Buffer{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		var out bytes.Buffer
		pl, err := h.provisioner(b, yaml).Apply(ctx, &out)
		if err != nil || pl.Pending() {
			b.Fatalf("re-apply changed something: %v\n%s", err, out.String())
		}
	}
}

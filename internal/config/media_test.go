package config

import "testing"

// TestMediaLearningDefaults: a file that says nothing learns
// heuristically (NATed phones get audio on the defaults); the deprecated
// nat_latching: true still means any; an explicit mode is kept.
func TestMediaLearningDefaults(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"media: {address: 127.0.0.1}\n", LearningHeuristic},
		{"media: {nat_latching: false}\n", LearningHeuristic},
		{"media: {nat_latching: true}\n", LearningAny},
		{"media: {nat_latching: true, learning: any}\n", LearningAny},
		{"media: {learning: strict}\n", LearningStrict},
	} {
		c, err := Load("test.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if c.Media.Learning != tc.want {
			t.Errorf("%q: learning %q, want %q", tc.yaml, c.Media.Learning, tc.want)
		}
	}
}

package kernel

// Regenerating the BPF objects needs clang and libbpf-dev; building does not.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -type flow_key -type flow_action rtpfwd rtpfwd.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu

package testenv

import (
	"os"
	"runtime"
	"testing"
)

// TestInNetnsLeavesNoThreadBehind: after many InNetns calls, every thread
// of the process, the main one included, is back in the host's network
// namespace. A thread left in the lab's once made /proc/net (which follows
// the main thread) show the lab's sockets, and tests waiting for SIPp to
// bind looked in the wrong table.
func TestInNetnsLeavesNoThreadBehind(t *testing.T) {
	ns := Netns(t, "vxtestenv")
	runtime.LockOSThread()
	host, err := os.Readlink("/proc/thread-self/ns/net")
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		var inside string
		InNetns(t, ns, func() { inside, _ = os.Readlink("/proc/thread-self/ns/net") })
		if inside == host {
			t.Fatalf("InNetns ran f in the host's namespace %s", host)
		}
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // the thread ended meanwhile
		}
		if got != host {
			t.Errorf("thread %s is left in %s, not the host's %s", task.Name(), got, host)
		}
	}
}

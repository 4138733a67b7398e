// Command clientgo-elector campaigns for a Kubernetes Lease with client-go's
// own leader election (k8s.io/client-go/tools/leaderelection, LeaseLock) and
// prints one JSON line per event on stdout, so a test can run it next to
// leaderlib replicas on the same Lease and compare their terms.
//
// Every event carries the process's CLOCK_MONOTONIC and CLOCK_BOOTTIME
// readings and the wall clock, in seconds:
//
//	{"event":"started_leading","identity":"a","leader":"a","monotonic":..,"boottime":..,"wall":..}
//
// Events:
//
//	new_leader       client-go observed a new holder ("leader"; may be this process)
//	started_leading  OnStartedLeading ran: this process's work may start now
//	stopped_leading  the work context handed to OnStartedLeading was cancelled:
//	                 its work must stop now ("reason": "signal" or "lost")
//	released         the Lease was written with an empty holder (ReleaseOnCancel)
//
// SIGTERM or SIGINT cancels the election's context: client-go stops renewing
// and, with --release-on-cancel (default true), releases the Lease; the
// process then exits 0. Leadership lost without a signal (renewal failed past
// --renew-deadline) ends the process with status 3, as client-go programs
// usually exit when leaderelection is lost. Bad flags exit 2; errors go to
// stderr (klog).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

const exitLost = 3

// seconds is a flag.Value that takes a Go duration ("1.5s", "200ms") or
// float seconds ("1.5"), as leaderlib's configuration does.
type seconds struct{ d time.Duration }

func (s *seconds) String() string { return s.d.String() }

func (s *seconds) Set(v string) error {
	if d, err := time.ParseDuration(v); err == nil {
		s.d = d
		return nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return fmt.Errorf("%q is neither a Go duration nor float seconds", v)
	}
	s.d = time.Duration(f * float64(time.Second))
	return nil
}

// emitter writes one JSON object per line. Each line is a single write(2) on
// the unbuffered os.Stdout, so a reader sees whole lines as soon as they exist.
type emitter struct {
	mu       sync.Mutex
	identity string
}

func clock(id int32) float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(id, &ts); err != nil {
		return -1
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func (e *emitter) emit(event, leader string, extra map[string]any) {
	// Clocks are read first and together, so the stamps describe one instant.
	rec := map[string]any{
		"event":     event,
		"identity":  e.identity,
		"leader":    leader,
		"monotonic": clock(unix.CLOCK_MONOTONIC),
		"boottime":  clock(unix.CLOCK_BOOTTIME),
		"wall":      float64(time.Now().UnixNano()) / 1e9,
	}
	for k, v := range extra {
		rec[k] = v
	}
	line, err := json.Marshal(rec)
	if err != nil {
		klog.ErrorS(err, "cannot encode event", "event", event)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = os.Stdout.Write(append(line, '\n'))
}

// watchedLock is the LeaseLock with two observations added: whether this
// candidate ever acquired the Lease (client-go starts OnStartedLeading in a
// goroutine, so main must know whether to wait for it), and when a release
// (empty holder) was written.
type watchedLock struct {
	resourcelock.Interface
	out      *emitter
	acquired atomic.Bool
}

func (l *watchedLock) wrote(rec resourcelock.LeaderElectionRecord) {
	switch rec.HolderIdentity {
	case l.Identity():
		l.acquired.Store(true)
	case "":
		l.out.emit("released", "", nil)
	}
}

func (l *watchedLock) Create(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, rec)
	if err == nil {
		l.wrote(rec)
	}
	return err
}

func (l *watchedLock) Update(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, rec)
	if err == nil {
		l.wrote(rec)
	}
	return err
}

func main() {
	os.Exit(run())
}

func run() int {
	var (
		kubeconfig      = flag.String("kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
		namespace       = flag.String("namespace", "", "namespace of the Lease (default: the kubeconfig context's)")
		name            = flag.String("name", "", "name of the Lease (required)")
		identity        = flag.String("identity", "", "holder identity (default: HOSTNAME_PID)")
		leaseDuration   = seconds{15 * time.Second}
		renewDeadline   = seconds{10 * time.Second}
		retryPeriod     = seconds{2 * time.Second}
		requestTimeout  = seconds{0}
		releaseOnCancel = flag.Bool("release-on-cancel", true, "release the Lease when SIGTERM/SIGINT cancels the election")
	)
	flag.Var(&leaseDuration, "lease-duration", "LeaseDuration (Go duration or float seconds)")
	flag.Var(&renewDeadline, "renew-deadline", "RenewDeadline (Go duration or float seconds)")
	flag.Var(&retryPeriod, "retry-period", "RetryPeriod (Go duration or float seconds)")
	flag.Var(&requestTimeout, "request-timeout", "rest.Config Timeout per API request (0: none, client-go's default)")
	klog.InitFlags(nil)
	flag.Parse()
	if *name == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "clientgo-elector: --name is required and no positional arguments are taken")
		flag.Usage()
		return 2
	}
	if *identity == "" {
		host, _ := os.Hostname()
		*identity = fmt.Sprintf("%s_%d", host, os.Getpid())
	}

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = *kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		klog.ErrorS(err, "cannot load the client configuration")
		return 2
	}
	cfg.Timeout = requestTimeout.d
	if *namespace == "" {
		if *namespace, _, err = loader.Namespace(); err != nil {
			klog.ErrorS(err, "cannot tell the namespace")
			return 2
		}
	}
	client, err := coordinationv1.NewForConfig(cfg)
	if err != nil {
		klog.ErrorS(err, "cannot build the coordination/v1 client")
		return 2
	}

	out := &emitter{identity: *identity}
	lock := &watchedLock{
		Interface: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Name: *name, Namespace: *namespace},
			Client:     client,
			LockConfig: resourcelock.ResourceLockConfig{Identity: *identity},
		},
		out: out,
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var signalled atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		signalled.Store(true)
		cancel()
	}()

	// Closed when OnStartedLeading has printed stopped_leading.
	workDone := make(chan struct{})
	var elector *leaderelection.LeaderElector
	elector, err = leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            *name,
		LeaseDuration:   leaseDuration.d,
		RenewDeadline:   renewDeadline.d,
		RetryPeriod:     retryPeriod.d,
		ReleaseOnCancel: *releaseOnCancel,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(work context.Context) {
				defer close(workDone)
				out.emit("started_leading", *identity, nil)
				// The work context is what a client-go program's jobs run
				// under: its cancellation is the end of this term.
				<-work.Done()
				reason := "lost"
				if signalled.Load() {
					reason = "signal"
				}
				out.emit("stopped_leading", elector.GetLeader(), map[string]any{"reason": reason})
			},
			// Called when Run returns, whether or not this process led; the
			// events come from OnStartedLeading instead.
			OnStoppedLeading: func() {},
			OnNewLeader: func(leader string) {
				out.emit("new_leader", leader, nil)
			},
		},
	})
	if err != nil {
		klog.ErrorS(err, "invalid leader election configuration")
		return 2
	}
	elector.Run(ctx)
	if lock.acquired.Load() {
		// Run started OnStartedLeading in a goroutine and has cancelled its
		// context; wait until it has printed stopped_leading.
		<-workDone
	}
	if signalled.Load() {
		return 0
	}
	return exitLost
}

// Package localcluster is the local Kubernetes that the e2e suite and `make demo` share: a real etcd,
// kube-apiserver and kube-controller-manager on loopback (StartControlPlane), a fake kubelet that gives
// every pod a fake engine on its own loopback address (NewKubelet), tokenscale installed from the
// manifests as a user installs it (StartStack), and the converter's controller and agents run as
// processes. It is a test harness: no shipped binary links it.
package localcluster

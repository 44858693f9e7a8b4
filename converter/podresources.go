package converter

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// DefaultPodResourcesSocket is where the kubelet serves the PodResources API.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// PodResources maps pods to their devices through the kubelet's PodResources API (read-only).
type PodResources struct {
	client podresourcesv1.PodResourcesListerClient
	conn   *grpc.ClientConn
	// ResourcePrefix selects GPU resources (default "nvidia.com/", which covers nvidia.com/gpu and the
	// nvidia.com/mig-* resources).
	ResourcePrefix string
	Timeout        time.Duration
}

// DialPodResources connects to the kubelet's socket; Close releases the connection.
func DialPodResources(socket string) (*PodResources, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("pod resources socket %s: %w", socket, err)
	}
	return &PodResources{client: podresourcesv1.NewPodResourcesListerClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (p *PodResources) Close() error { return p.conn.Close() }

// Devices returns the device IDs of the pod's GPU resources. List is used rather than Get because it is
// served by every kubelet version that has the v1 API.
func (p *PodResources) Devices(ctx context.Context, namespace, pod string) ([]string, error) {
	prefix := p.ResourcePrefix
	if prefix == "" {
		prefix = "nvidia.com/"
	}
	pr, err := p.find(ctx, namespace, pod)
	if err != nil {
		return nil, err
	}
	if pr == nil {
		return nil, fmt.Errorf("kubelet PodResources has no pod %s/%s on this node", namespace, pod)
	}
	var ids []string
	for _, c := range pr.GetContainers() {
		for _, d := range c.GetDevices() {
			if strings.HasPrefix(d.GetResourceName(), prefix) {
				ids = append(ids, d.GetDeviceIds()...)
			}
		}
	}
	return ids, nil
}

// Runs reports whether the kubelet lists the pod among those it runs now (with or without devices).
func (p *PodResources) Runs(ctx context.Context, namespace, pod string) (bool, error) {
	pr, err := p.find(ctx, namespace, pod)
	return pr != nil, err
}

// find is the pod's entry in the kubelet's List, nil when the kubelet does not run it.
func (p *PodResources) find(ctx context.Context, namespace, pod string) (*podresourcesv1.PodResources, error) {
	timeout := p.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := p.client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("kubelet PodResources List: %w", err)
	}
	for _, pr := range resp.GetPodResources() {
		if pr.GetNamespace() == namespace && pr.GetName() == pod {
			return pr, nil
		}
	}
	return nil, nil
}

// ssa-floor applies every object of the YAML files under a directory with server-side apply,
// many at a time: Namespaces first, nothing else ordered, nothing waited for. It is the floor
// a deploy tool's first deploy is measured against in scripts/bench-deploy (test support, not
// the product).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

func main() {
	dir := flag.String("dir", "", "directory of YAML files (searched recursively)")
	concurrency := flag.Int("concurrency", 32, "applies in flight at once")
	flag.Parse()
	if err := run(*dir, *concurrency); err != nil {
		fmt.Fprintln(os.Stderr, "ssa-floor:", err)
		os.Exit(1)
	}
}

func run(dir string, concurrency int) error {
	objects, err := readObjects(dir)
	if err != nil {
		return err
	}
	config, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		return err
	}
	// No client-side throttling: the floor is what the API server can take.
	config.QPS, config.Burst = 10000, 10000
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return err
	}
	discoveryClient, err := discovery.NewDiscoveryClientForConfig(config)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discoveryClient))
	var namespaces, rest []*unstructured.Unstructured
	for _, object := range objects {
		if object.GetKind() == "Namespace" {
			namespaces = append(namespaces, object)
		} else {
			rest = append(rest, object)
		}
	}
	for _, batch := range [][]*unstructured.Unstructured{namespaces, rest} {
		if err := applyAll(client, mapper, batch, concurrency); err != nil {
			return err
		}
	}
	fmt.Printf("applied %d objects\n", len(objects))
	return nil
}

// applyAll applies the objects, `concurrency` at a time; the first error is returned.
func applyAll(client dynamic.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper, objects []*unstructured.Unstructured, concurrency int) error {
	slots := make(chan struct{}, concurrency)
	errs := make(chan error, len(objects))
	var wg sync.WaitGroup
	for _, object := range objects {
		wg.Add(1)
		slots <- struct{}{}
		go func(object *unstructured.Unstructured) {
			defer wg.Done()
			defer func() { <-slots }()
			if err := apply(client, mapper, object); err != nil {
				errs <- fmt.Errorf("%s/%s: %w", object.GetKind(), object.GetName(), err)
			}
		}(object)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func apply(client dynamic.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper, object *unstructured.Unstructured) error {
	gvk := object.GroupVersionKind()
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	var resource dynamic.ResourceInterface = client.Resource(mapping.Resource)
	if mapping.Scope.Name() == "namespace" {
		resource = client.Resource(mapping.Resource).Namespace(object.GetNamespace())
	}
	body, err := json.Marshal(object)
	if err != nil {
		return err
	}
	force := true
	_, err = resource.Patch(context.Background(), object.GetName(), types.ApplyPatchType, body,
		metav1.PatchOptions{FieldManager: "ssa-floor", Force: &force})
	return err
}

// readObjects reads every document of every .yaml file under dir.
func readObjects(dir string) ([]*unstructured.Unstructured, error) {
	var objects []*unstructured.Unstructured
	err := filepath.WalkDir(dir, func(path string, entry os.DirEntry, err error) error {
		if err != nil || entry.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, document := range bytes.Split(text, []byte("\n---")) {
			if len(bytes.TrimSpace(document)) == 0 {
				continue
			}
			object := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(document, &object.Object); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			objects = append(objects, object)
		}
		return nil
	})
	return objects, err
}

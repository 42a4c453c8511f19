package telemetry

import "go.opentelemetry.io/otel/attribute"

// semconvServiceName is the service.name resource attribute.
func semconvServiceName(name string) attribute.KeyValue {
	return attribute.String("service.name", name)
}

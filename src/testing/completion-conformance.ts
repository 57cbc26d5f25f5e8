// Placeholder: filled in by the conformance work of issue 13.
export {};

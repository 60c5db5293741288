package org.pytorch.executorch;

/** Stub of ExecuTorch's Android EValue (the signatures the generated selector uses). */
public class EValue {
    private final Tensor tensor;

    private EValue(Tensor tensor) {
        this.tensor = tensor;
    }

    public static EValue from(Tensor tensor) {
        return new EValue(tensor);
    }

    public Tensor toTensor() {
        return tensor;
    }
}

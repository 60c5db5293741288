package org.pytorch.executorch;

/** Stub of ExecuTorch's Android Tensor (the signatures the generated selector uses). */
public abstract class Tensor {
    public static Tensor fromBlob(float[] data, long[] shape) {
        return new Tensor() {
            @Override
            public float[] getDataAsFloatArray() {
                return data;
            }
        };
    }

    public float[] getDataAsFloatArray() {
        throw new IllegalStateException("not a float tensor");
    }
}

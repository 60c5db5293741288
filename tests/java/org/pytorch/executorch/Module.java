package org.pytorch.executorch;

import java.io.File;

/** Stub of ExecuTorch's Android Module (same signatures): loads nothing, returns zero logits. Only for type checks. */
public class Module {
    private Module() {}

    public static Module load(String modelPath) {
        if (!new File(modelPath).isFile()) {
            throw new RuntimeException("no such model file: " + modelPath);
        }
        return new Module();
    }

    public EValue[] forward(EValue... inputs) {
        return new EValue[] {EValue.from(Tensor.fromBlob(new float[Integer.getInteger("stub.classes", 10)], new long[] {1, 10}))};
    }

    public void destroy() {}
}

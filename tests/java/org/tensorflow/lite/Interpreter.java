package org.tensorflow.lite;

import java.io.File;

/** Stub of LiteRT's Android Interpreter (same signatures): loads nothing, leaves the logits at zero. Only for type checks. */
public final class Interpreter implements AutoCloseable {
    public Interpreter(File modelFile) {
        if (!modelFile.isFile()) {
            throw new IllegalArgumentException("no such model file: " + modelFile);
        }
    }

    public Tensor getInputTensor(int inputIndex) {
        return new Tensor(Float.parseFloat(System.getProperty("stub.inputScale", "0")), 784);
    }

    public Tensor getOutputTensor(int outputIndex) {
        return new Tensor(0.1f, Integer.getInteger("stub.classes", 10));
    }

    public void run(Object input, Object output) {}

    @Override
    public void close() {}
}

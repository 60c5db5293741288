package org.tensorflow.lite;

/** Stub of LiteRT's Tensor (the members the generated code calls). */
public final class Tensor {
    /** A tensor's int8 scale and zero point; scale 0 for a float tensor. */
    public static final class QuantizationParams {
        private final float scale;
        private final int zeroPoint;

        public QuantizationParams(float scale, int zeroPoint) {
            this.scale = scale;
            this.zeroPoint = zeroPoint;
        }

        public float getScale() {
            return scale;
        }

        public int getZeroPoint() {
            return zeroPoint;
        }
    }

    private final QuantizationParams params;
    private final int elements;

    Tensor(float scale, int elements) {
        this.params = new QuantizationParams(scale, 0);
        this.elements = elements;
    }

    public int numElements() {
        return elements;
    }

    public QuantizationParams quantizationParams() {
        return params;
    }
}

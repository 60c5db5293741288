"""App code generated from a bundle's manifest: the single-model snippets (``snippets/Classifier.{kt,swift}``) and the
on-device variant selectors of a version-2 manifest (``selector/VariantSelector.{java,kt,swift}``).

The templates here hold what every app does (normalize, classify, select); how the phone runtime is imported,
loaded and called comes from the export format's :class:`~udacisense.formats.base.Snippet`, so the code a phone
runtime needs is written once, beside the format it loads.

Each selector does on the phone what ``udacisense select`` does here: walk the variants in the manifest's order of
preference (most accurate first), load each with the phone runtime (ExecuTorch), check it reproduces its golden outputs (an altered or damaged file
is rejected), time it at batch 1, and take the first that meets the latency budget. The decision is cached per device
model, app version and budget, so the micro-benchmark runs once per install and update. Unlike the Python reference,
which times every variant to report on all of them, the device stops at the first variant that fits: the choice is
the same, the battery cost lower.

All three files are filled from one :func:`selector_spec`; golden inputs and outputs go in little-endian float32
files (``selector/golden/*.bin``: the inputs, then the expected logits) because Java and Swift have no JSON parser
that every app already has.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterable

from udacisense.formats import FORMATS
from udacisense.formats.base import AppCode, Snippet, phone_formats

PACKAGE = "ai.udacisense.selector"


def phone_snippet(kinds: Iterable[str]) -> Snippet:
    """The app code of the phone runtime that loads the first of ``kinds`` a phone runtime loads (none: the first
    registered such format's, so the generated code still compiles against a runtime)."""
    phone = phone_formats()
    return FORMATS[next((kind for kind in kinds if kind in phone), phone[0])].snippet


def runtime_calls(app: AppCode, path: str, shape: str) -> dict[str, str]:
    """A phone runtime's calls as the templates use them: its imports, its module type, loading the file at ``path``,
    and running (``forward``, on ``input`` of ``shape``) and freeing (``release``) the loaded ``module``."""
    return {"imports": app.imports, "module_type": app.module_type, "load": app.load.format(path=path),
            "forward": app.forward.format(module="module", input="input", shape=shape), "release": app.release.format(module="module")}


CLASSIFIER_KOTLIN = """// {runtime} on Android: values below come from manifest.json ({source}).
{dependency}
{imports}

object {class_name} {{
    val SHAPE = longArrayOf({shape_list})
    val MEAN = floatArrayOf({mean_list})
    val STD = floatArrayOf({std_list})
    val LABELS = arrayOf({labels})

    /** pixels: {channels}x{height}x{width} values in 0..255, channel-major. Returns the top class label. */
    fun classify(modulePath: String, pixels: FloatArray): String {{
        val module = {load}  // e.g. filesDir + "/{file}"
        val plane = {height} * {width}
        val input = FloatArray(pixels.size) {{ i -> (pixels[i] / 255f - MEAN[i / plane]) / STD[i / plane] }}
        val logits = {forward}
        return LABELS[logits.indices.maxByOrNull {{ logits[it] }}!!]
    }}
}}
"""

CLASSIFIER_SWIFT = """// {runtime} on iOS: values below come from manifest.json ({source}).
{dependency}
{imports}

enum {class_name} {{
    static let shape: [Int] = [{shape_list}]
    static let mean: [Float] = [{mean_list}]
    static let std: [Float] = [{std_list}]
    static let labels = [{labels}]

    /// pixels: {channels}x{height}x{width} values in 0...255, channel-major. Returns the top class label.
    static func classify(modelPath: String, pixels: [Float]) throws -> String {{
        let module = {load}  // Bundle.main.path(forResource: "{stem}", ofType: "{extension}")
        let plane = {height} * {width}
        let input = pixels.enumerated().map {{ (i, p) in (p / 255 - mean[i / plane]) / std[i / plane] }}
        let logits = {forward}
        return labels[logits.indices.max {{ logits[$0] < logits[$1] }}!]
    }}
}}
"""


def write_snippets(folder: Path, manifest: dict[str, Any]) -> None:
    """Kotlin and Swift loaders whose shape, normalization and labels are filled from the manifest: one pair per phone
    runtime the bundle has a file for, loading its int8 file first (the smallest to ship). ``Classifier.{kt,swift}``
    is for the bundle's preferred file; another runtime's pair is ``Classifier<Runtime>`` (e.g. ``ClassifierLiteRT.kt``)."""
    phone = phone_formats()
    loaded = sorted((kind for kind in manifest["artifacts"] if kind in phone), key=lambda kind: not FORMATS[kind].quantized)
    per_runtime: dict[str, str] = {}
    for kind in loaded or phone[:1]:  # a bundle without such a file gets the first phone format's code, for a placeholder file
        per_runtime.setdefault(FORMATS[kind].snippet.name, kind)
    snippets = folder / "snippets"
    snippets.mkdir(exist_ok=True)
    for index, (runtime, kind) in enumerate(per_runtime.items()):
        file = manifest["artifacts"][kind]["file"] if loaded else "model" + Path(FORMATS[kind].file_name).suffix
        _write_snippet_pair(snippets, manifest, FORMATS[kind].snippet, file, "" if index == 0 else runtime)


def _write_snippet_pair(snippets: Path, manifest: dict[str, Any], snippet: Snippet, file: str, suffix: str) -> None:
    contract = manifest["input"]
    _, channels, height, width = contract["shape"]
    values = {
        "runtime": snippet.name,
        "source": "udacisense export",
        "class_name": f"UdaciSense{suffix}Classifier",
        "shape_list": ", ".join(str(v) for v in contract["shape"]),
        "mean_list": ", ".join(f"{v:.6f}f" for v in contract["mean"]),
        "std_list": ", ".join(f"{v:.6f}f" for v in contract["std"]),
        "labels": ", ".join(json.dumps(label) for label in contract["classes"]),
        "channels": channels,
        "height": height,
        "width": width,
        "file": file,
        "stem": Path(file).stem,
        "extension": Path(file).suffix.lstrip("."),
    }
    version = manifest["versions"].get(snippet.package, "not installed")
    kotlin = values | {"dependency": snippet.android_dependency.format(version=version)} | runtime_calls(snippet.kotlin, "modulePath", "SHAPE")
    (snippets / f"Classifier{suffix}.kt").write_text(CLASSIFIER_KOTLIN.format(**kotlin))
    swift = values | {"mean_list": values["mean_list"].replace("f", ""), "std_list": values["std_list"].replace("f", ""),
                      "dependency": snippet.ios_dependency.format(version=version)} | runtime_calls(snippet.swift, "modelPath", "shape")
    (snippets / f"Classifier{suffix}.swift").write_text(CLASSIFIER_SWIFT.format(**swift))


def selector_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest fields every generated selector is built from. Its variants are those a phone runtime loads (the
    runtime of the most preferred one: the code calls one runtime), in order of preference; other formats' variants,
    and variants that failed validation when bundled, are left out."""
    phone = phone_formats()
    usable = [row for row in manifest["variants"] if row["format"] in phone and row["runs_here"] and not row["validation_failures"]]
    snippet = phone_snippet(row["format"] for row in usable)
    variants = [
        {"id": row["id"], "file": row["file"], "golden": f"selector/golden/{row['id'].replace('/', '__')}.bin", "top1": row["top1"],
         "bytes": row["bytes"], "sha256": row["sha256"], "source": row["golden"], "format": row["format"],
         "mean": manifest["models"][row["model"]]["input"]["mean"], "std": manifest["models"][row["model"]]["input"]["std"]}
        for row in usable if FORMATS[row["format"]].snippet == snippet
    ]
    return {"shape": manifest["input"]["shape"], "classes": len(manifest["input"]["classes"]), "golden_count": manifest["golden"]["count"],
            "atol": manifest["golden"]["atol"], "variants": variants, "created": manifest["created"]}


def write_selectors(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``selector/VariantSelector.{java,kt,swift}`` and the golden files they read; returns the spec they were made from."""
    spec = selector_spec(manifest)
    goldens: dict[str, dict[str, Any]] = {}
    for variant in spec["variants"]:
        if variant["source"] not in goldens:
            goldens[variant["source"]] = json.loads((folder / variant["source"]).read_text())
        golden = goldens[variant["source"]]
        values = [value for image in golden["inputs"] for value in _flatten(image)]
        values += [value for logits in golden["outputs"][variant["format"]] for value in logits]
        path = folder / variant["golden"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(struct.pack(f"<{len(values)}f", *values))
    code = folder / "selector"
    code.mkdir(exist_ok=True)
    (code / "VariantSelector.java").write_text(java_source(spec))
    (code / "VariantSelector.kt").write_text(kotlin_source(spec))
    (code / "VariantSelector.swift").write_text(swift_source(spec))
    return spec


def _flatten(values: Any) -> list[float]:
    return [item for value in values for item in _flatten(value)] if isinstance(values, list) else [float(values)]


def _floats(values: list[float], suffix: str = "") -> str:
    return ", ".join(f"{value:.8g}{suffix}" for value in values)


def _header(spec: dict[str, Any], comment: str) -> str:
    return (f"{comment} Generated by 'udacisense bundle' from manifest.json ({spec['created']}); regenerate it with the bundle, do not edit.\n"
            f"{comment} Variants in order of preference (most accurate first); golden files hold {spec['golden_count']} inputs, then their logits.\n")


def _selector_runtime(spec: dict[str, Any]) -> Snippet:
    return phone_snippet(variant["format"] for variant in spec["variants"])


def java_source(spec: dict[str, Any]) -> str:
    """Plain Java against the phone runtime's Android API (ExecuTorch's org.pytorch.executorch); compiles with javac
    against a stub of it."""
    calls = runtime_calls(_selector_runtime(spec).java, 'bundleDir + "/" + variant.file', "SHAPE")
    return _jvm_source(spec, SELECTOR_JAVA, calls, "new Variant", lambda values: f"new float[] {{{values}}}")


def kotlin_source(spec: dict[str, Any]) -> str:
    """Kotlin for Android apps; same fields and logic as the Java selector."""
    calls = runtime_calls(_selector_runtime(spec).kotlin, '"$bundleDir/${variant.file}"', "SHAPE")
    return _jvm_source(spec, SELECTOR_KOTLIN, calls, "Variant", lambda values: f"floatArrayOf({values})")


def _jvm_source(spec: dict[str, Any], template: str, calls: dict[str, str], constructor: str, float_array) -> str:
    rows = ",\n".join(f'        {constructor}({json.dumps(v["id"])}, {json.dumps(v["file"])}, {json.dumps(v["golden"])}, {v["top1"]:.4f}, '
                      f'{v["bytes"]}L,\n            {float_array(_floats(v["mean"], "f"))}, {float_array(_floats(v["std"], "f"))})'
                      for v in spec["variants"])
    return _header(spec, "//") + template.format(
        package=PACKAGE, rows=rows, shape=", ".join(f"{d}L" for d in spec["shape"]), classes=spec["classes"],
        count=spec["golden_count"], atol=f"{spec['atol']:g}f", **calls,
    )


def swift_source(spec: dict[str, Any]) -> str:
    """Swift for iOS apps (the phone runtime's Swift package: ExecuTorch's); same fields and logic as the Java selector."""
    calls = runtime_calls(_selector_runtime(spec).swift, 'bundleDir + "/" + variant.file', "shape")
    rows = ",\n".join(f'        Variant(id: {json.dumps(v["id"])}, file: {json.dumps(v["file"])}, golden: {json.dumps(v["golden"])}, '
                      f'top1: {v["top1"]:.4f}, bytes: {v["bytes"]}, mean: [{_floats(v["mean"])}], std: [{_floats(v["std"])}])' for v in spec["variants"])
    return _header(spec, "//") + SELECTOR_SWIFT.format(
        rows=rows, shape=", ".join(str(d) for d in spec["shape"]), classes=spec["classes"], count=spec["golden_count"], atol=f"{spec['atol']:g}",
        **calls,
    )


SELECTOR_JAVA = """package {package};

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
{imports}

/** Picks the most accurate model variant that meets a latency budget on this device. */
public final class VariantSelector {{
    /** One variant of the bundle: its model file and golden file (paths inside the bundle), test top-1, size, and the
     *  per-channel normalization its model expects (pixels / 255, minus mean, divided by std). */
    public static final class Variant {{
        public final String id;
        public final String file;
        public final String golden;
        public final double top1;
        public final long bytes;
        public final float[] mean;
        public final float[] std;

        Variant(String id, String file, String golden, double top1, long bytes, float[] mean, float[] std) {{
            this.id = id;
            this.file = file;
            this.golden = golden;
            this.top1 = top1;
            this.bytes = bytes;
            this.mean = mean;
            this.std = std;
        }}

        /** Channel-major pixels in 0..255 to the model's input. */
        public float[] normalize(float[] pixels) {{
            int plane = pixels.length / mean.length;
            float[] input = new float[pixels.length];
            for (int index = 0; index < pixels.length; index++) {{
                input[index] = (pixels[index] / 255f - mean[index / plane]) / std[index / plane];
            }}
            return input;
        }}
    }}

    /** Where decisions are kept between launches (e.g. SharedPreferences); null keeps none. */
    public interface DecisionCache {{
        String get(String key);

        void put(String key, String value);
    }}

    /** The chosen variant (null: none fits the budget) and why each variant before it was rejected. */
    public static final class Decision {{
        public final Variant chosen;
        public final Map<String, String> reasons;
        public final boolean cached;

        Decision(Variant chosen, Map<String, String> reasons, boolean cached) {{
            this.chosen = chosen;
            this.reasons = reasons;
            this.cached = cached;
        }}
    }}

    public static final Variant[] VARIANTS = {{
{rows}
    }};
    public static final long[] SHAPE = {{{shape}}};
    public static final int CLASSES = {classes};
    public static final int GOLDEN_COUNT = {count};
    public static final float GOLDEN_ATOL = {atol};

    private VariantSelector() {{}}

    /** Select for {{@code budgetMs}} (p50 at batch 1); {{@code bundleDir}} holds the bundle's files. */
    public static Decision select(String bundleDir, double budgetMs, int warmup, int runs, DecisionCache cache,
                                  String deviceModel, String appVersion) {{
        String key = "udacisense-variant|" + deviceModel + "|" + appVersion + "|" + budgetMs;
        String remembered = cache == null ? null : cache.get(key);
        for (Variant variant : VARIANTS) {{
            if (variant.id.equals(remembered)) {{
                return new Decision(variant, new LinkedHashMap<String, String>(), true);
            }}
        }}
        Map<String, String> reasons = new LinkedHashMap<>();
        for (Variant variant : VARIANTS) {{
            String reason = tryVariant(bundleDir, variant, budgetMs, warmup, runs);
            if (reason == null) {{
                if (cache != null) {{
                    cache.put(key, variant.id);
                }}
                return new Decision(variant, reasons, false);
            }}
            reasons.put(variant.id, reason);
        }}
        return new Decision(null, reasons, false);
    }}

    /** Null when the variant passes its golden check and meets the budget, else why not. */
    static String tryVariant(String bundleDir, Variant variant, double budgetMs, int warmup, int runs) {{
        {module_type} module;
        try {{
            module = {load};
        }} catch (RuntimeException error) {{
            return "could not load: " + error.getMessage();
        }}
        try {{
            float drift = goldenDrift(module, bundleDir + "/" + variant.golden);
            if (!(drift <= GOLDEN_ATOL)) {{
                return "golden check failed: outputs differ by " + drift + " > " + GOLDEN_ATOL + " (altered or damaged file)";
            }}
            double p50 = medianLatencyMs(module, warmup, runs);
            if (p50 > budgetMs) {{
                return "too slow: p50 " + p50 + " ms > " + budgetMs + " ms";
            }}
            return null;
        }} catch (IOException | RuntimeException error) {{
            return "could not run: " + error;
        }} finally {{
            {release};
        }}
    }}

    static float[] forward({module_type} module, float[] input) {{
        return {forward};
    }}

    /** Largest difference between the variant's logits on the golden inputs and the manifest's. */
    static float goldenDrift({module_type} module, String goldenPath) throws IOException {{
        FloatBuffer golden = ByteBuffer.wrap(Files.readAllBytes(Paths.get(goldenPath))).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
        int size = 1;
        for (long dimension : SHAPE) {{
            size *= (int) dimension;
        }}
        float[] inputs = new float[GOLDEN_COUNT * size];
        float[] expected = new float[GOLDEN_COUNT * CLASSES];
        golden.get(inputs).get(expected);
        float drift = 0f;
        for (int image = 0; image < GOLDEN_COUNT; image++) {{
            float[] logits = forward(module, Arrays.copyOfRange(inputs, image * size, (image + 1) * size));
            if (logits.length != CLASSES) {{
                return Float.POSITIVE_INFINITY;
            }}
            for (int index = 0; index < CLASSES; index++) {{
                drift = Math.max(drift, Math.abs(logits[index] - expected[image * CLASSES + index]));
            }}
        }}
        return drift;
    }}

    static double medianLatencyMs({module_type} module, int warmup, int runs) {{
        int size = 1;
        for (long dimension : SHAPE) {{
            size *= (int) dimension;
        }}
        float[] input = new float[size];
        for (int run = 0; run < warmup; run++) {{
            forward(module, input);
        }}
        double[] timings = new double[Math.max(1, runs)];
        for (int run = 0; run < timings.length; run++) {{
            long started = System.nanoTime();
            forward(module, input);
            timings[run] = (System.nanoTime() - started) / 1e6;
        }}
        Arrays.sort(timings);
        return timings[timings.length / 2];
    }}
}}
"""

SELECTOR_KOTLIN = """package {package}

import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.io.File
{imports}

/** Picks the most accurate model variant that meets a latency budget on this device (see VariantSelector.java). */
object VariantSelector {{
    /** mean, std: the per-channel normalization the variant's model expects (pixels / 255, minus mean, divided by std). */
    class Variant(val id: String, val file: String, val golden: String, val top1: Double, val bytes: Long, val mean: FloatArray, val std: FloatArray) {{
        fun normalize(pixels: FloatArray): FloatArray {{
            val plane = pixels.size / mean.size
            return FloatArray(pixels.size) {{ (pixels[it] / 255f - mean[it / plane]) / std[it / plane] }}
        }}
    }}

    /** Where decisions are kept between launches, e.g. backed by SharedPreferences. */
    interface DecisionCache {{
        fun get(key: String): String?
        fun put(key: String, value: String)
    }}

    data class Decision(val chosen: Variant?, val reasons: Map<String, String>, val cached: Boolean)

    val VARIANTS = listOf(
{rows}
    )
    val SHAPE = longArrayOf({shape})
    const val CLASSES = {classes}
    const val GOLDEN_COUNT = {count}
    const val GOLDEN_ATOL = {atol}

    /** deviceModel: android.os.Build.MODEL; appVersion: the app's versionName. */
    fun select(bundleDir: String, budgetMs: Double, warmup: Int, runs: Int, cache: DecisionCache?,
               deviceModel: String, appVersion: String): Decision {{
        val key = "udacisense-variant|$deviceModel|$appVersion|$budgetMs"
        VARIANTS.firstOrNull {{ it.id == cache?.get(key) }}?.let {{ return Decision(it, emptyMap(), true) }}
        val reasons = linkedMapOf<String, String>()
        for (variant in VARIANTS) {{
            val reason = tryVariant(bundleDir, variant, budgetMs, warmup, runs)
            if (reason == null) {{
                cache?.put(key, variant.id)
                return Decision(variant, reasons, false)
            }}
            reasons[variant.id] = reason
        }}
        return Decision(null, reasons, false)
    }}

    private fun tryVariant(bundleDir: String, variant: Variant, budgetMs: Double, warmup: Int, runs: Int): String? {{
        val module = try {{ {load} }} catch (error: RuntimeException) {{ return "could not load: ${{error.message}}" }}
        try {{
            val drift = goldenDrift(module, "$bundleDir/${{variant.golden}}")
            if (!(drift <= GOLDEN_ATOL)) return "golden check failed: outputs differ by $drift > $GOLDEN_ATOL (altered or damaged file)"
            val p50 = medianLatencyMs(module, warmup, runs)
            return if (p50 > budgetMs) "too slow: p50 $p50 ms > $budgetMs ms" else null
        }} catch (error: Exception) {{
            return "could not run: $error"
        }} finally {{
            {release}
        }}
    }}

    private fun forward(module: {module_type}, input: FloatArray): FloatArray =
        {forward}

    private fun goldenDrift(module: {module_type}, goldenPath: String): Float {{
        val golden = ByteBuffer.wrap(File(goldenPath).readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        val size = SHAPE.fold(1L) {{ product, dimension -> product * dimension }}.toInt()
        val inputs = FloatArray(GOLDEN_COUNT * size).also {{ golden.get(it) }}
        val expected = FloatArray(GOLDEN_COUNT * CLASSES).also {{ golden.get(it) }}
        var drift = 0f
        for (image in 0 until GOLDEN_COUNT) {{
            val logits = forward(module, inputs.copyOfRange(image * size, (image + 1) * size))
            if (logits.size != CLASSES) return Float.POSITIVE_INFINITY
            for (index in 0 until CLASSES) drift = maxOf(drift, kotlin.math.abs(logits[index] - expected[image * CLASSES + index]))
        }}
        return drift
    }}

    private fun medianLatencyMs(module: {module_type}, warmup: Int, runs: Int): Double {{
        val input = FloatArray(SHAPE.fold(1L) {{ product, dimension -> product * dimension }}.toInt())
        repeat(warmup) {{ forward(module, input) }}
        val timings = DoubleArray(maxOf(1, runs)) {{
            val started = System.nanoTime()
            forward(module, input)
            (System.nanoTime() - started) / 1e6
        }}
        timings.sort()
        return timings[timings.size / 2]
    }}
}}
"""

SELECTOR_SWIFT = """{imports}
import Foundation

/// Picks the most accurate model variant that meets a latency budget on this device (see VariantSelector.java).
enum VariantSelector {{
    /// mean, std: the per-channel normalization the variant's model expects (pixels / 255, minus mean, divided by std).
    struct Variant {{
        let id: String
        let file: String
        let golden: String
        let top1: Double
        let bytes: Int
        let mean: [Float]
        let std: [Float]

        func normalize(_ pixels: [Float]) -> [Float] {{
            let plane = pixels.count / mean.count
            return pixels.indices.map {{ (pixels[$0] / 255 - mean[$0 / plane]) / std[$0 / plane] }}
        }}
    }}

    struct Decision {{
        let chosen: Variant?
        let reasons: [(String, String)]
        let cached: Bool
    }}

    static let variants: [Variant] = [
{rows}
    ]
    static let shape: [Int] = [{shape}]
    static let classes = {classes}
    static let goldenCount = {count}
    static let goldenAtol: Float = {atol}

    /// Decisions are kept in UserDefaults per device model, app version and budget.
    static func select(bundleDir: String, budgetMs: Double, warmup: Int = 10, runs: Int = 50,
                       defaults: UserDefaults = .standard) -> Decision {{
        var machine = utsname()
        uname(&machine)
        let model = withUnsafeBytes(of: &machine.machine) {{ String(decoding: $0.prefix {{ $0 != 0 }}, as: UTF8.self) }}
        let version = Bundle.main.infoDictionary?["CFBundleShortVersionString"] as? String ?? "unknown"
        let key = "udacisense-variant|\\(model)|\\(version)|\\(budgetMs)"
        if let remembered = defaults.string(forKey: key), let variant = variants.first(where: {{ $0.id == remembered }}) {{
            return Decision(chosen: variant, reasons: [], cached: true)
        }}
        var reasons: [(String, String)] = []
        for variant in variants {{
            if let reason = tryVariant(bundleDir: bundleDir, variant: variant, budgetMs: budgetMs, warmup: warmup, runs: runs) {{
                reasons.append((variant.id, reason))
            }} else {{
                defaults.set(variant.id, forKey: key)
                return Decision(chosen: variant, reasons: reasons, cached: false)
            }}
        }}
        return Decision(chosen: nil, reasons: reasons, cached: false)
    }}

    private static func forward(_ module: {module_type}, _ input: [Float]) throws -> [Float] {{
        return {forward}
    }}

    private static func tryVariant(bundleDir: String, variant: Variant, budgetMs: Double, warmup: Int, runs: Int) -> String? {{
        let module = {load}
        do {{
            let data = try Data(contentsOf: URL(fileURLWithPath: bundleDir + "/" + variant.golden))
            let golden: [Float] = data.withUnsafeBytes {{ raw in
                (0..<(data.count / 4)).map {{ Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }}
            }}
            let size = shape.reduce(1, *)
            var drift: Float = 0
            for image in 0..<goldenCount {{
                let logits = try forward(module, Array(golden[(image * size)..<((image + 1) * size)]))
                guard logits.count == classes else {{ return "golden check failed: \\(logits.count) outputs, not \\(classes)" }}
                let expected = goldenCount * size + image * classes
                for index in 0..<classes {{ drift = max(drift, abs(logits[index] - golden[expected + index])) }}
            }}
            guard drift <= goldenAtol else {{ return "golden check failed: outputs differ by \\(drift) > \\(goldenAtol) (altered or damaged file)" }}
            let input = [Float](repeating: 0, count: size)
            for _ in 0..<warmup {{ _ = try forward(module, input) }}
            var timings: [Double] = []
            for _ in 0..<max(1, runs) {{
                let started = DispatchTime.now().uptimeNanoseconds
                _ = try forward(module, input)
                timings.append(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
            }}
            let p50 = timings.sorted()[timings.count / 2]
            return p50 > budgetMs ? "too slow: p50 \\(p50) ms > \\(budgetMs) ms" : nil
        }} catch {{
            return "could not run: \\(error)"
        }}
    }}
}}
"""

package harness;

import ai.udacisense.selector.VariantSelector;
import java.util.HashMap;
import java.util.Map;

/** Runs the generated selector against the stub runtime: prints one line per variant and the decision. */
public final class SelectorHarness {
    public static void main(String[] args) {
        Map<String, String> store = new HashMap<>();
        VariantSelector.DecisionCache cache = new VariantSelector.DecisionCache() {
            public String get(String key) {
                return store.get(key);
            }

            public void put(String key, String value) {
                store.put(key, value);
            }
        };
        VariantSelector.Decision decision = VariantSelector.select(args[0], Double.parseDouble(args[1]), 2, 5, cache, "test-device", "1.0");
        for (Map.Entry<String, String> reason : decision.reasons.entrySet()) {
            System.out.println("rejected " + reason.getKey() + ": " + reason.getValue());
        }
        System.out.println("chosen " + (decision.chosen == null ? "none" : decision.chosen.id));
    }
}

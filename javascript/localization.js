/*
 * Page translation for the web UI (loaded inline by modules/localization.head_html).
 *
 * window.localization is a flat {English text: translation} object in A1111's format.
 * Every text node of the page whose whole text (whitespace collapsed) is a key is replaced
 * by the translation, and so are the placeholder / title / aria-label / alt attributes and
 * the value of <input type=button|submit|reset>.  Nodes added later (tabs opened, dropdown
 * lists, toasts, re-rendered components) are handled by a MutationObserver, which also sees
 * a text node the framework rewrites in place.
 *
 * Never translated (user content):
 *   - text that is not a key of the dictionary (prompts, file and model names never are);
 *   - anything inside <textarea>, <script>, <style>, <code>, <pre> or contenteditable
 *     elements, and the values of text inputs and textareas;
 *   - anything inside an element with the class "no-translate" (model dropdowns, galleries,
 *     infotext), except the component's own label (the elements Gradio marks
 *     data-testid="block-info" / "block-label"), its status overlay
 *     (data-testid="status-tracker") and the title/aria-label of its buttons: those are UI.
 * One kind of input value is shown translated: the choice displayed by a closed dropdown
 * (<input role="combobox">, outside "no-translate") when it is a dictionary key; the
 * component's value itself stays English.
 *
 * Besides exact keys, a text "Label: details" is shown as "<translation of Label:> details"
 * when the dictionary has the key "Label:" (messages with a run-time part, e.g. errors).
 *
 * The dictionary embedded in the page is the language chosen when the server started; the
 * script asks localization/current.json for the language chosen now before its first pass,
 * so a language picked in the UI applies when the page reloads.
 */
(function () {
    "use strict";

    if (window.__localizationScript) {
        return;
    }
    window.__localizationScript = true;

    var ATTRIBUTES = ["placeholder", "title", "aria-label", "alt"];
    var HARD_SKIP = "textarea, script, style, code, pre, noscript, [contenteditable='true'], [contenteditable='']";
    var SKIP_TAGS = {TEXTAREA: 1, SCRIPT: 1, STYLE: 1, CODE: 1, PRE: 1, NOSCRIPT: 1};
    var NO_TRANSLATE = ".no-translate";
    var UI_INSIDE_NO_TRANSLATE = "[data-testid='block-info'], [data-testid='block-label'], [data-testid='status-tracker']";
    var BUTTON_INPUTS = {button: 1, submit: 1, reset: 1};
    var COMBOBOX = "input[role='combobox']";

    var table = Object.create(null);   // normalized English -> translation
    var size = 0;
    var lastSet = new WeakMap();       // text node -> the text we wrote (loop guard)
    var originals = new WeakMap();     // node -> the English it had
    var observer = null;
    var roots = [];

    function normalize(text) {
        return String(text).replace(/\s+/g, " ").trim();
    }

    function setDictionary(dict) {
        table = Object.create(null);
        size = 0;
        if (!dict || typeof dict !== "object") {
            return;
        }
        Object.keys(dict).forEach(function (key) {
            var value = dict[key];
            if (typeof value !== "string" || value === "") {
                return;
            }
            var k = normalize(key);
            if (k && value !== k) {
                table[k] = value;
                size++;
            }
        });
    }

    // The translation of a text, or null when it is not in the dictionary.
    function lookup(text) {
        if (!text || size === 0) {
            return null;
        }
        var k = normalize(text);
        if (!k) {
            return null;
        }
        if (k in table) {
            return table[k];
        }
        var colon = k.indexOf(": ");
        if (colon > 0) {
            var head = k.slice(0, colon + 1);
            if (head in table) {
                var rest = k.slice(colon + 2);
                return table[head] + " " + (rest in table ? table[rest] : rest);
            }
        }
        return null;
    }

    // Is the content (text) of this element user content?
    function contentSkipped(el) {
        if (!el || el.nodeType !== 1) {
            return false;
        }
        if (el.closest(HARD_SKIP)) {
            return true;
        }
        var nt = el.closest(NO_TRANSLATE);
        if (!nt) {
            return false;
        }
        var ui = el.closest(UI_INSIDE_NO_TRANSLATE);
        return !(ui && nt.contains(ui));
    }

    // Should this element's attributes be left alone?  The placeholder/title/aria-label of
    // fields and buttons are UI even inside "no-translate" (never the values of fields).
    function attributesSkipped(el) {
        if (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "BUTTON") {
            var p = el.parentElement;
            return !!(p && p.closest(HARD_SKIP));
        }
        return contentSkipped(el);
    }

    function translateText(node) {
        var text = node.nodeValue;
        if (!text || lastSet.get(node) === text) {
            return;
        }
        var tr = lookup(text);
        if (tr === null) {
            return;
        }
        var out = text.match(/^\s*/)[0] + tr + text.match(/\s*$/)[0];
        originals.set(node, text);
        lastSet.set(node, out);
        node.nodeValue = out;
    }

    function translateAttributes(el) {
        for (var i = 0; i < ATTRIBUTES.length; i++) {
            var name = ATTRIBUTES[i];
            var v = el.getAttribute(name);
            if (v) {
                var tr = lookup(v);
                if (tr !== null && tr !== v) {
                    el.setAttribute(name, tr);
                }
            }
        }
        if (el.tagName === "INPUT" && BUTTON_INPUTS[(el.getAttribute("type") || "").toLowerCase()]) {
            var tv = lookup(el.value);
            if (tv !== null && tv !== el.value) {
                el.value = tv;
            }
        }
    }

    function visit(node) {
        if (node.nodeType === 3) {
            if (!contentSkipped(node.parentElement)) {
                translateText(node);
            }
        } else if (node.nodeType === 1) {
            if (!attributesSkipped(node)) {
                translateAttributes(node);
            }
            if (node.shadowRoot) {
                watch(node.shadowRoot);
            }
        }
    }

    var walkerFilter = {
        acceptNode: function (node) {
            if (node.nodeType === 1 && (SKIP_TAGS[node.tagName] || node.isContentEditable)) {
                visit(node);  // the attributes (placeholder) of a textarea; never its content
                return NodeFilter.FILTER_REJECT;
            }
            return NodeFilter.FILTER_ACCEPT;
        }
    };

    // Translate a node and everything under it.
    function translateTree(root) {
        if (root.nodeType === 3) {
            visit(root);
            return;
        }
        if (root.nodeType !== 1 && root.nodeType !== 11) {
            return;
        }
        if (root.nodeType === 1) {
            if (SKIP_TAGS[root.tagName] || root.isContentEditable) {
                visit(root);
                return;
            }
            visit(root);
        }
        var walker = document.createTreeWalker(root, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT, walkerFilter);
        var node;
        while ((node = walker.nextNode())) {
            visit(node);
        }
    }

    // The text a closed dropdown shows is an <input> value that the page framework sets as
    // a property (no mutation is reported): translate it while the input is not focused.
    function translateComboboxes() {
        for (var r = 0; r < roots.length; r++) {
            var inputs = roots[r].querySelectorAll(COMBOBOX);
            for (var i = 0; i < inputs.length; i++) {
                var el = inputs[i];
                if (el === document.activeElement || !el.value || el.closest(NO_TRANSLATE) || el.closest(HARD_SKIP)) {
                    continue;
                }
                var tr = lookup(el.value);
                if (tr !== null && tr !== el.value) {
                    originals.set(el, el.value);
                    el.value = tr;
                }
            }
        }
    }

    function onMutations(records) {
        for (var i = 0; i < records.length; i++) {
            var r = records[i];
            if (r.type === "childList") {
                for (var j = 0; j < r.addedNodes.length; j++) {
                    translateTree(r.addedNodes[j]);
                }
            } else if (r.type === "characterData") {
                visit(r.target);
            } else if (r.type === "attributes") {
                visit(r.target);
            }
        }
    }

    function watch(root) {
        if (roots.indexOf(root) >= 0) {
            return;
        }
        roots.push(root);
        translateTree(root);
        observer.observe(root, {
            childList: true,
            subtree: true,
            characterData: true,
            attributes: true,
            attributeFilter: ATTRIBUTES.concat(["value"])
        });
    }

    function start() {
        var name = window.localization_name || "None";
        document.documentElement.setAttribute("data-localization", size ? name : "None");
        if (size === 0) {
            return;  // English: nothing to do
        }
        document.documentElement.setAttribute("lang", name.replace("_", "-"));
        observer = new MutationObserver(onMutations);
        watch(document.body);
        var apps = document.querySelectorAll("gradio-app");
        for (var i = 0; i < apps.length; i++) {
            if (apps[i].shadowRoot) {
                watch(apps[i].shadowRoot);
            }
        }
        var soon = function () {
            setTimeout(translateComboboxes, 0);
        };
        document.addEventListener("focusout", soon, true);
        document.addEventListener("change", soon, true);
        setInterval(translateComboboxes, 400);
        translateComboboxes();
    }

    var started = false;

    function begin() {
        if (started) {
            return;
        }
        started = true;
        if (document.body) {
            start();
        } else {
            document.addEventListener("DOMContentLoaded", start);
        }
    }

    // Helpers for other scripts: the translation of a text (the text itself when there is
    // none), a new pass over the page, and the English a translated node had.
    window.localizationLookup = function (text) {
        var tr = lookup(text || "");
        return tr === null ? text : tr;
    };
    window.localizePage = function () {
        if (observer) {
            roots.forEach(translateTree);
            translateComboboxes();
        }
    };
    window.localizationOriginal = function (node) {
        return originals.get(node);
    };

    setDictionary(window.localization);

    // Ask the server which language is chosen now; wait for the answer at most a moment.
    var timer = setTimeout(begin, 3000);
    try {
        fetch(new URL("localization/current.json", document.baseURI).href, {cache: "no-store"})
            .then(function (resp) {
                return resp.ok ? resp.json() : null;
            })
            .then(function (data) {
                if (!started && data && typeof data === "object" && data.localization &&
                    typeof data.localization === "object") {
                    window.localization = data.localization;
                    window.localization_name = data.name || "None";
                    setDictionary(window.localization);
                }
            })
            .catch(function () { /* no such route: keep the embedded dictionary */ })
            .then(function () {
                clearTimeout(timer);
                begin();
            });
    } catch (e) {
        clearTimeout(timer);
        begin();
    }
}());

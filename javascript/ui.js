// Keyboard shortcuts of the prompt boxes (as in A1111): Ctrl+Enter = Generate, Alt+Enter = Skip, Esc = Interrupt.
// Only elements with ids the UI sets itself are used.
(() => {
    const TABS = ["txt2img", "img2img"];
    document.addEventListener("keydown", (e) => {
        const target = e.target;
        if (!target || target.tagName !== "TEXTAREA") return;
        for (const tab of TABS) {
            if (!target.closest(`#${tab}_prompt, #${tab}_neg_prompt`)) continue;
            let id = null;
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) id = `${tab}_generate`;
            else if (e.key === "Enter" && e.altKey) id = `${tab}_skip`;
            else if (e.key === "Escape") id = `${tab}_interrupt`;
            const button = id && document.getElementById(id);
            if (button) {
                e.preventDefault();
                // let the textbox hand its value to gradio first
                target.dispatchEvent(new Event("input", {bubbles: true}));
                setTimeout(() => button.click(), 50);
            }
            return;
        }
    });
})();

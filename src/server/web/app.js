// Small improvements for browsers with scripts on; every page works
// without them. No inline scripts: the content security policy forbids them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // A copy button beside each pull command.
  for (const input of document.querySelectorAll(".pull .cmd input")) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Copy";
    button.addEventListener("click", async () => {
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (_) {
        document.execCommand("copy");
      }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
    input.after(button);
  }
  // Times in the reader's own time zone (the server writes UTC).
  for (const t of document.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      t.title = t.getAttribute("datetime");
      t.textContent = d.toLocaleString();
    }
  }
});

// mta-stsd admin pages: the one script. It only adds "Copy" to the DNS records; everything
// else works without it.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const done = () => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(button.dataset.copy).then(done, () => {});
  } else {
    // Over plain HTTP to a non-loopback address there is no clipboard API: select the value
    // so the reader can copy it by hand.
    const code = button.previousElementSibling;
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
});

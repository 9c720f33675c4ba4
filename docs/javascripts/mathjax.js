// MathJax 3 reads only what pymdownx.arithmatex (generic mode) marked as math; Material's
// instant navigation is not enabled, so each page load typesets its page once.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

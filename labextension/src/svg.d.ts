// The builder loads an .svg imported from TypeScript as its source text.
declare module '*.svg' {
  const value: string;
  export default value;
}

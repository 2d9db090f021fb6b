package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment override: PARLEY_ followed by the key's
// path in upper case with dots as underscores, e.g. PARLEY_DATABASE_URL or
// PARLEY_REGISTRATION_ENABLED. Lists are comma-separated; maps are set as
// PARLEY_DATABASE_COMPONENTS_SYNCAPI.
const EnvPrefix = "PARLEY_"

// Load reads the YAML file at path over the defaults, applies environment
// overrides, and validates the result. A missing file is an error; unknown
// keys and wrong types are reported with the key's path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML over the defaults, then applies the environment and validates.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) > 0 {
		if err := decodeNode(root.Content[0], reflect.ValueOf(cfg).Elem(), ""); err != nil {
			return nil, err
		}
	}
	if err := applyEnv(reflect.ValueOf(cfg).Elem(), "", os.LookupEnv); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decodeNode decodes n into v field by field so an unknown key or a value of
// the wrong type is reported with its full path, not a Go type name.
func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() == reflect.Struct {
		if n.Kind != yaml.MappingNode {
			if n.Tag == "!!null" {
				return nil
			}
			return fmt.Errorf("%s (line %d): expected a mapping of keys", orRoot(path), n.Line)
		}
		fields := fieldsByKey(v.Type())
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			idx, ok := fields[key]
			if !ok {
				return fmt.Errorf("%s (line %d): unknown key; known keys here: %s", join(path, key), n.Content[i].Line, knownKeys(fields))
			}
			if err := decodeNode(n.Content[i+1], v.Field(idx), join(path, key)); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Tag == "!!null" {
		return nil
	}
	target := reflect.New(v.Type())
	if err := n.Decode(target.Interface()); err != nil {
		return fmt.Errorf("%s (line %d): expected %s, got %q", path, n.Line, describe(v.Type()), n.Value)
	}
	v.Set(target.Elem())
	return nil
}

func applyEnv(v reflect.Value, path string, lookup func(string) (string, bool)) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := t.Field(i).Tag.Get("yaml")
		p := join(path, key)
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			if err := applyEnv(f, p, lookup); err != nil {
				return err
			}
			continue
		}
		if f.Kind() == reflect.Map {
			for _, name := range Components {
				env := EnvName(join(p, name))
				if s, ok := lookup(env); ok {
					if f.IsNil() {
						f.Set(reflect.MakeMap(f.Type()))
					}
					f.SetMapIndex(reflect.ValueOf(name), reflect.ValueOf(s))
				}
			}
			continue
		}
		env := EnvName(p)
		s, ok := lookup(env)
		if !ok {
			continue
		}
		if err := setScalar(f, s); err != nil {
			return fmt.Errorf("%s (from %s): expected %s, got %q", p, env, describe(f.Type()), s)
		}
	}
	return nil
}

// EnvName is the environment variable that overrides the key at path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func setScalar(f reflect.Value, s string) error {
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		f.SetFloat(n)
	case reflect.Slice:
		list := []string{}
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				list = append(list, part)
			}
		}
		f.Set(reflect.ValueOf(list))
	default:
		return errors.New("unsupported kind")
	}
	return nil
}

func fieldsByKey(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		m[t.Field(i).Tag.Get("yaml")] = i
	}
	return m
}

func knownKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list of strings"
	case reflect.Map:
		return "a mapping of names to strings"
	default:
		return "a string"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// Generate writes c as a YAML file in which every key carries its doc
// comment, its default value and the environment variable that overrides it.
func Generate(c *Config) ([]byte, error) {
	defaults := Default()
	root := encodeStruct(reflect.ValueOf(c).Elem(), reflect.ValueOf(defaults).Elem(), "")
	root.HeadComment = "Parley configuration. Every key is listed with its default.\n" +
		"Relative paths are inside the data directory. Any key can be overridden\n" +
		"from the environment: " + EnvPrefix + "<KEY_PATH>, e.g. PARLEY_DATABASE_URL."
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func encodeStruct(v, def reflect.Value, path string) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		key := sf.Tag.Get("yaml")
		p := join(path, key)
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: key}
		var val *yaml.Node
		if sf.Type.Kind() == reflect.Struct {
			k.HeadComment = sf.Tag.Get("doc")
			val = encodeStruct(v.Field(i), def.Field(i), p)
		} else {
			val = &yaml.Node{}
			_ = val.Encode(v.Field(i).Interface())
			if val.Kind == yaml.SequenceNode || val.Kind == yaml.MappingNode {
				val.Style = yaml.FlowStyle
			}
			defVal, _ := yaml.Marshal(def.Field(i).Interface())
			env := EnvName(p)
			if sf.Type.Kind() == reflect.Map {
				env += "_<NAME>"
			}
			k.HeadComment = fmt.Sprintf("%s\nDefault: %s  Environment: %s", sf.Tag.Get("doc"), strings.TrimSpace(string(defVal)), env)
		}
		m.Content = append(m.Content, k, val)
	}
	return m
}
